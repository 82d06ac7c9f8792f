//! Table-file names: under the cluster's table directory, one name per database, model,
//! instruction, version and build.

use lr_table::{build_stamp, table_file, TABLE_DIR};

#[test]
fn names_say_database_model_version_and_build() {
    let f = table_file(16384, "minilm", "", 2, 0x00ab_cdef);
    assert!(f.starts_with(&format!("{TABLE_DIR}/db16384-minilm-")), "{f}");
    assert!(f.ends_with("-v2-0000000000abcdef.lrt"), "{f}");
    assert_eq!(f, "lightretriever/tables/db16384-minilm-cbf29ce484222325-v2-0000000000abcdef.lrt");
}

#[test]
fn every_part_of_the_key_changes_the_name() {
    let base = table_file(1, "m", "", 1, 7);
    for other in [
        table_file(2, "m", "", 1, 7),
        table_file(1, "n", "", 1, 7),
        table_file(1, "m", "Given a query", 1, 7),
        table_file(1, "m", "", 2, 7),
        table_file(1, "m", "", 1, 8),
    ] {
        assert_ne!(base, other);
    }
    // Instructions are hashed: any text makes a plain file name.
    let f = table_file(1, "m", "Given a \"query\"/../\nretrieve", 1, 7);
    assert_eq!(f.matches('/').count(), 2, "{f}");
}

#[test]
fn stamps_of_successive_builds_differ() {
    let stamps: Vec<u64> = (0..1000).map(|_| build_stamp()).collect();
    let mut unique = stamps.clone();
    unique.sort_unstable();
    unique.dedup();
    assert!(unique.len() >= 990, "{} distinct of 1000", unique.len());
}
