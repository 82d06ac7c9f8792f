//! Full-model document encoding: `lr_encode_document(s)`, run by the encoder worker (see
//! `inference.rs`).

use lr_service::Task;
use pgrx::datum::Array;
use pgrx::prelude::*;

use crate::guc::resolve_model;
use crate::pgvector::Vector;
use crate::statement::{statement_key, LastAnswer};

fn encode(texts: &[&str], model: Option<&str>) -> Vec<Vec<f32>> {
    let name = resolve_model(model);
    let info = crate::catalog::load_model(&name);
    crate::inference::dense(&name, &info, Task::Dense { texts: texts.iter().map(|t| t.to_string()).collect() })
}

thread_local! {
    /// The last answer, valid for one statement (the function is STABLE): an index scan
    /// ordering by `emb <#> lr_encode_document('…')` evaluates the expression again for every
    /// row it returns when the index asks for its distances to be rechecked (measured: 10 worker
    /// calls for LIMIT 10 on HNSW), and one full-model run must serve them all.
    static LAST: LastAnswer<(String, String), Vec<f32>> = const { LastAnswer::new() };
}

/// Encodes one document with the full model (tokenize, forward, pool, L2-normalise).
/// NULL text gives NULL; NULL model means `lightretriever.default_model`.
#[pg_extern(stable, parallel_safe, cost = 400000)]
fn lr_encode_document(doc: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<Vector> {
    let doc = doc?;
    let name = resolve_model(model);
    let statement = statement_key();
    if let Some(v) = LAST.with(|l| l.get(statement, |(m, d)| *m == name && d == doc)) {
        return Some(Vector(v));
    }
    let v = encode(&[doc], Some(&name)).pop()?;
    LAST.with(|l| l.set(statement, (name, doc.to_owned()), v.clone()));
    Some(Vector(v))
}

/// Encodes many documents in batches; one row per input, in input order (use
/// `WITH ORDINALITY` to pair them), NULL for a NULL element.
#[pg_extern(stable, parallel_safe, cost = 400000)]
fn lr_encode_documents<'a>(
    docs: Option<Array<'a, &'a str>>,
    model: default!(Option<&'a str>, "NULL"),
) -> SetOfIterator<'a, Option<Vector>> {
    let Some(docs) = docs else {
        return SetOfIterator::empty();
    };
    SetOfIterator::new(super::per_element(docs, |texts| encode(texts, model)).into_iter().map(|v| v.map(Vector)))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::pgvector::Vector;
    use crate::test_support::*;
    use pgrx::prelude::*;

    #[pg_test]
    fn documents_match_the_independent_reference() {
        register_dense_model();
        let r = reference();
        for s in r["sentences"].as_array().unwrap() {
            let text = s["text"].as_str().unwrap();
            let v = Spi::get_one_with_args::<Vector>(
                "SELECT lightretriever.lr_encode_document($1, 'minilm')",
                &[text.into()],
            )
            .unwrap()
            .unwrap();
            assert_matches(&v.0, &floats(&s["embedding"]), text);
        }
    }

    /// The encode functions carry planner costs: a prepared `ORDER BY emb <#> f(q) LIMIT 10`
    /// on a small indexed table scans the HNSW index (the query encoded once), where with the
    /// default cost of 1 the generic plan sorted every row by f(q), encoding it once per row.
    #[pg_test]
    fn the_planner_encodes_the_query_once_through_the_index() {
        Spi::run(
            "CREATE TABLE small (id int PRIMARY KEY, emb vector(384));
             INSERT INTO small SELECT i, (SELECT array_agg(sin(i * 7 + k))::vector(384) FROM generate_series(1, 384) k) FROM generate_series(1, 1500) i;
             CREATE INDEX ON small USING hnsw (emb vector_ip_ops);
             ANALYZE small;
             SET LOCAL plan_cache_mode = force_generic_plan",
        )
        .unwrap();
        for f in ["lr_encode_document($1, 'minilm')", "lr_encode_query($1, 'minilm')"] {
            Spi::run(&format!("PREPARE nearest(text) AS SELECT id FROM small ORDER BY emb <#> lightretriever.{f} LIMIT 10")).unwrap();
            let plan: Vec<String> = Spi::connect(|c| {
                c.select("EXPLAIN EXECUTE nearest('a query')", None, &[]).unwrap().map(|r| r.get::<String>(1).unwrap().unwrap()).collect()
            });
            assert!(plan.iter().any(|l| l.contains("Index Scan using small_emb_idx")), "{f}: {plan:#?}");
            Spi::run("DEALLOCATE nearest").unwrap();
        }
    }

    #[pg_test]
    fn batch_keeps_order_and_nulls_and_default_model_applies() {
        register_dense_model();
        Spi::run("SET LOCAL lightretriever.default_model = 'minilm'").unwrap();
        let r = reference();
        let s = r["sentences"].as_array().unwrap();
        let (a, b) = (s[0]["text"].as_str().unwrap(), s[1]["text"].as_str().unwrap());
        let rows: Vec<(i64, Option<Vector>)> = Spi::connect(|c| {
            c.select(
                "SELECT n, v FROM lightretriever.lr_encode_documents(ARRAY[$1, NULL, $2]) WITH ORDINALITY AS t(v, n) ORDER BY n",
                None,
                &[a.into(), b.into()],
            )
            .unwrap()
            .map(|row| (row.get::<i64>(1).unwrap().unwrap(), row.get::<Vector>(2).unwrap()))
            .collect()
        });
        assert_eq!(rows.len(), 3);
        assert_matches(&rows[0].1.as_ref().unwrap().0, &floats(&s[0]["embedding"]), a);
        assert!(rows[1].1.is_none());
        assert_matches(&rows[2].1.as_ref().unwrap().0, &floats(&s[1]["embedding"]), b);
        let null = Spi::get_one::<Vector>("SELECT lightretriever.lr_encode_document(NULL)").unwrap();
        assert!(null.is_none());
    }
}
