//! Every statement of auto-encoding: golden text for two tables (a plain one with a composite
//! key of odd names, a partitioned one with a sparse column), and a lint over all of them: no
//! unqualified function call, no operator outside `OPERATOR(pg_catalog.…)`, no user type but in
//! the statements that run as the table owner. Regenerate the golden files with
//! `LR_BLESS=1 cargo test -p lr-queue` and review the diff.

use lr_queue::{quote_ident, quote_literal, Encoding};

fn plain() -> (Vec<String>, Vec<String>) {
    (vec!["Key".into(), "Second \"Key\"".into()], vec!["integer".into(), "\"Odd Schema\".\"my type\"".into()])
}

fn with<'a>(keys: &'a [String], types: &'a [String], plain: bool) -> Encoding<'a> {
    Encoding {
        id: 7,
        queue_schema: lr_queue::QUEUE_SCHEMA,
        source: if plain { "\"Odd Schema\".\"My \"\"Table\"\"\"" } else { "public.parts" },
        plain,
        text_column: if plain { "Body Text" } else { "body" },
        key_columns: keys,
        key_types: types,
        vector_column: if plain { "Body Text_embedding" } else { "body_embedding" },
        sparse_column: if plain { None } else { Some("body_sparse") },
    }
}

/// Every statement, labelled, as the golden file holds them.
fn all(e: &Encoding) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for s in e.create_queue() {
        out.push(("create_queue", s));
    }
    for s in e.trigger_functions() {
        out.push(("trigger_functions", s));
    }
    for s in e.create_triggers() {
        out.push(("create_triggers", s));
    }
    for s in e.drop_triggers() {
        out.push(("drop_triggers", s));
    }
    for (label, s) in [
        ("backfill_keys", e.backfill_keys()),
        ("missing_keys", e.missing_keys()),
        ("enqueue_keys", e.enqueue_keys()),
        ("claim", e.claim()),
        ("read_texts", e.read_texts()),
        ("lock_rows", e.lock_rows()),
        ("write_vectors", e.write_vectors()),
        ("count_vectors", e.count_vectors()),
        ("count_attempt", e.count_attempt()),
        ("mark_failed", e.mark_failed()),
        ("finish", e.finish()),
        ("retry_soon", e.retry_soon()),
        ("retry_failed", e.retry_failed()),
        ("queue_counts", e.queue_counts()),
        ("pending_exists", e.pending_exists()),
        ("failed_rows", e.failed_rows()),
        ("create_pending_index", e.create_pending_index()),
        ("pending_rows", e.pending_rows()),
        ("pending_count", e.pending_count()),
        ("write_vectors_by_key", e.write_vectors_by_key()),
        ("failure_entry", e.failure_entry()),
        ("still_pending", e.still_pending()),
        ("forget_keys", e.forget_keys()),
        ("entry_keys", e.entry_keys()),
    ] {
        out.push((label, s));
    }
    out
}

fn render(e: &Encoding) -> String {
    all(e).into_iter().map(|(label, s)| format!("-- {label}\n{s};\n")).collect::<Vec<_>>().join("\n")
}

fn golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("LR_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} is missing: run with LR_BLESS=1", path.display()));
    if want != got {
        let first = want.lines().zip(got.lines()).position(|(a, b)| a != b).unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}:\n  want: {:?}\n  got:  {:?}\n(LR_BLESS=1 rewrites it)",
            first + 1,
            want.lines().nth(first),
            got.lines().nth(first)
        );
    }
}

#[test]
fn statements_match_the_golden_files() {
    let (keys, types) = plain();
    golden("plain_composite_key.sql", &render(&with(&keys, &types, true)));
    let (keys, types) = (vec!["region".to_string(), "id".to_string()], vec!["text".to_string(), "bigint".to_string()]);
    golden("partitioned_sparse.sql", &render(&with(&keys, &types, false)));
}

/// The statement with string literals, quoted identifiers and dollar-quote markers blanked.
fn code_only(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                while let Some(d) = chars.next() {
                    if d == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            continue;
                        }
                        break;
                    }
                }
                out.push('Q');
            }
            _ => out.push(c),
        }
    }
    out.replace("$lr$", " ")
}

/// Words that stand right before `(` without being a function call (calls are written
/// `name(`; keywords before a parenthesis are followed by a space).
/// COALESCE, LEAST and GREATEST are grammar, not functions: nothing resolves them by name.
const NOT_CALLS: [&str; 6] = ["ARRAY", "OPERATOR", "k", "COALESCE", "LEAST", "GREATEST"];

#[test]
fn every_function_and_operator_is_schema_qualified() {
    let (keys, types) = plain();
    let (pkeys, ptypes) = (vec!["region".to_string(), "id".to_string()], vec!["text".to_string(), "bigint".to_string()]);
    for e in [with(&keys, &types, true), with(&pkeys, &ptypes, false)] {
        for (label, sql) in all(&e) {
            let code = code_only(&sql);
            // Calls: an identifier followed by "(" must be pg_catalog-qualified (or a keyword).
            for (at, _) in code.match_indices('(') {
                let before = &code[..at];
                let word_start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).map_or(0, |i| i + 1);
                let word = &before[word_start..];
                if word.is_empty() || NOT_CALLS.contains(&word) {
                    continue;
                }
                assert!(
                    word.starts_with("pg_catalog.") || word.starts_with("lightretriever."),
                    "{label}: unqualified call {word}( in\n{sql}"
                );
            }
            // Operators: none left once OPERATOR(pg_catalog.x), assignments and named arguments go.
            let mut rest = code.clone();
            while let Some(i) = rest.find("OPERATOR(pg_catalog.") {
                let end = rest[i..].find(')').unwrap() + i;
                rest.replace_range(i..=end, " ");
            }
            for safe in [":=", "=>", "::"] {
                rest = rest.replace(safe, " ");
            }
            let assignments = regex_lite_assignments(&rest);
            for op in ["=", "<", ">", "+", "^", "~", "!", "|", "&"] {
                assert!(!assignments.contains(op), "{label}: bare operator {op} in\n{sql}\n(after stripping: {assignments})");
            }
        }
    }
}

/// Removes `SET name = value` function settings and `col = expr` targets of UPDATE … SET, which
/// are assignments, not operators.
fn regex_lite_assignments(code: &str) -> String {
    let mut out = String::new();
    for line in code.split_inclusive('\n') {
        let mut l = line.to_owned();
        // Function SET clauses: SET name = Q / SET search_path = pg_catalog, pg_temp.
        while let Some(i) = l.find("SET ") {
            let after = &l[i + 4..];
            let Some(eq) = after.find(" = ") else { break };
            if after[..eq].split_whitespace().count() != 1 {
                break;
            }
            l.replace_range(i..i + 4 + eq + 3, " ");
        }
        // UPDATE targets: "Q = $1, Q = $2" / "attempts = 0, failed_at = NULL".
        for target in ["Q = $", "last_error = $", "attempts = ", "retry_at = ", "failed_at = "] {
            l = l.replace(target, " ");
        }
        out.push_str(&l);
    }
    out
}

/// `a OPERATOR(pg_catalog.<) b OPERATOR(pg_catalog.-) c` parses as `(a < b) - c`: every
/// `OPERATOR(…)` has one precedence, so an arithmetic operand of a comparison must be in
/// parentheses.
#[test]
fn comparisons_never_take_unparenthesised_arithmetic() {
    let (keys, types) = plain();
    let e = with(&keys, &types, true);
    for (label, sql) in all(&e) {
        let code = code_only(&sql);
        for cmp in ["=)", "<>)", "<)", ">)", "<=)", ">=)"] {
            let pattern = format!("OPERATOR(pg_catalog.{cmp}");
            let mut from = 0;
            while let Some(i) = code[from..].find(&pattern) {
                let rest = &code[from + i + pattern.len()..];
                let (mut depth, mut end) = (0i32, rest.len());
                for (j, c) in rest.char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 0 => {
                            end = j;
                            break;
                        }
                        ')' => depth -= 1,
                        ',' | '\n' if depth == 0 => {
                            end = j;
                            break;
                        }
                        _ => {}
                    }
                    if depth == 0 && (rest[j..].starts_with(" AND ") || rest[j..].starts_with(" OR ") || rest[j..].starts_with(" THEN")) {
                        end = j;
                        break;
                    }
                }
                let operand = &rest[..end];
                let top_level: String = {
                    let mut d = 0;
                    operand.chars().filter(|c| { if *c == '(' { d += 1 } else if *c == ')' { d -= 1 }; d == 0 }).collect()
                };
                for arith in ["OPERATOR(pg_catalog.+", "OPERATOR(pg_catalog.-", "OPERATOR(pg_catalog.*", "OPERATOR(pg_catalog./", "OPERATOR(pg_catalog.^"] {
                    assert!(!operand.contains(arith) || !top_level.contains("OPERATOR"), "{label}: {operand:?} needs parentheses in\n{sql}");
                }
                from += i + pattern.len();
            }
        }
    }
}

#[test]
fn odd_names_are_quoted_and_literals_escaped() {
    assert_eq!(quote_ident("My \"Table\""), "\"My \"\"Table\"\"\"");
    assert_eq!(quote_literal("it's"), "'it''s'");
    assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
}

#[test]
fn user_types_appear_only_in_the_statements_run_as_the_owner() {
    let (keys, types) = plain();
    let e = with(&keys, &types, true);
    let owner_statements = ["read_texts", "lock_rows", "write_vectors_by_key"];
    for (label, sql) in all(&e) {
        let mentions = sql.contains("\"my type\"");
        assert_eq!(mentions, owner_statements.contains(&label), "{label}: {sql}");
    }
}

/// Column names are the owner's: one containing the dollar-quote tag must not end a generated
/// function's body (what follows would run as the extension's owner).
#[test]
fn names_cannot_end_a_function_body() {
    let keys = vec!["$lr$;SELECT evil();SELECT $lr$".to_string()];
    let types = vec!["integer".to_string()];
    let mut e = with(&keys, &types, true);
    e.text_column = "$lr1$ body $lr2$";
    for sql in e.trigger_functions().iter().filter(|s| s.starts_with("CREATE")) {
        let at = sql.find(" AS $").expect("a dollar-quoted body") + 4;
        let tag = &sql[at..=at + sql[at + 1..].find('$').unwrap() + 1];
        assert_eq!(sql.matches(tag).count(), 2, "tag {tag} must open and close the body only:\n{sql}");
        assert!(sql.ends_with(tag), "{sql}");
    }
}

#[test]
fn multi_column_keys_unnest_one_array_per_column() {
    let (keys, types) = plain();
    let e = with(&keys, &types, true);
    assert!(e.read_texts().contains("ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[]))"));
    assert!(e.enqueue_keys().contains("ROWS FROM ("));
}
