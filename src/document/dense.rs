//! Full-model document encoding: `lr_encode_document(s)`, run by the encoder worker (see
//! `inference.rs`).

use lr_service::Task;
use pgrx::datum::Array;
use pgrx::prelude::*;

use crate::guc::resolve_model;
use crate::pgvector::Vector;

fn encode(texts: &[&str], model: Option<&str>) -> Vec<Vec<f32>> {
    let name = resolve_model(model);
    let info = crate::catalog::load_model(&name);
    crate::inference::dense(&name, &info, Task::Dense { texts: texts.iter().map(|t| t.to_string()).collect() })
}

/// Encodes one document with the full model (tokenize, forward, pool, L2-normalise).
/// NULL text gives NULL; NULL model means `lightretriever.default_model`.
#[pg_extern(stable, parallel_safe, cost = 400000)]
fn lr_encode_document(doc: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<Vector> {
    let doc = doc?;
    encode(&[doc], model).pop().map(Vector)
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
