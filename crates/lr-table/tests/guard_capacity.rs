//! The SIGBUS guard's registry has MAX_MAPPED_TABLES slots. Its own test binary (its own
//! process), so that filling the registry cannot disturb the other tests, and one test, so
//! nothing else in this process holds slots meanwhile.

use lr_table::{Dtype, QueryTable, TableError, TableMeta, TableWriter, MAX_MAPPED_TABLES};

#[test]
fn slots_are_reused_and_a_full_registry_is_an_error() {
    let d = std::env::temp_dir().join(format!("lr-table-guard-capacity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("t.lrt");
    let meta = TableMeta {
        model: "m".into(),
        instruction: None,
        tokenizer_fingerprint: "abc".into(),
        build: serde_json::Value::Null,
    };
    let mut w = TableWriter::create(&p, &meta, 3, 4, Dtype::F32).unwrap();
    w.write_rows(&(0..12).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    w.finish().unwrap();

    // In sequence, many more opens than slots: each drop frees its slot.
    for i in 0..3 * MAX_MAPPED_TABLES {
        let t = QueryTable::open(&p).unwrap_or_else(|e| panic!("open #{i}: {e}"));
        assert_eq!(t.row(2), vec![8.0, 9.0, 10.0, 11.0]);
    }

    // At once: exactly MAX_MAPPED_TABLES, then an error (not a crash).
    let mut held: Vec<QueryTable> = (0..MAX_MAPPED_TABLES)
        .map(|i| QueryTable::open(&p).unwrap_or_else(|e| panic!("open #{i} of {MAX_MAPPED_TABLES}: {e}")))
        .collect();
    match QueryTable::open(&p) {
        Err(e @ TableError::TooManyMapped { limit, .. }) => {
            assert_eq!(limit, MAX_MAPPED_TABLES);
            assert!(e.to_string().contains("already maps 256 query tables"), "{e}");
        }
        other => panic!("expected TooManyMapped, got {other:?}"),
    }
    // Every held table still reads, and each one's damage flag is its own.
    assert!(held.iter().all(|t| t.row(1) == vec![4.0, 5.0, 6.0, 7.0] && !t.is_damaged()));
    // Freeing one slot makes room for one more.
    held.swap_remove(17);
    let again = QueryTable::open(&p).unwrap();
    assert!(matches!(QueryTable::open(&p), Err(TableError::TooManyMapped { .. })));
    drop(again);
    drop(held);
    for _ in 0..MAX_MAPPED_TABLES {
        QueryTable::open(&p).unwrap();
    }
}
