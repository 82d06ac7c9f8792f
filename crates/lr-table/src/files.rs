//! Where query-table files live and how they are named. The directory is the cluster's (under
//! the data directory, shared by its databases); its files are caches of bytes the database holds.

use crate::format::fnv1a64_words;

/// The directory of table files, relative to the data directory (a backend's working directory).
pub const TABLE_DIR: &str = "lightretriever/tables";

/// The node-local file of version `version` of (model, instruction) in database `database`, whose
/// data checksum is `checksum`:
/// `lightretriever/tables/db<oid>-<model>-<instruction hash>-v<version>-<checksum>.lrt`. Every
/// node derives the same kind of name from the catalog row and its own database's oid (a restored
/// dump, a replica and a Citus node alike), so the name is where that node caches the stored
/// bytes. The database keeps databases apart (the same model name and version in two databases
/// are two files). Model names are catalog-checked (`[A-Za-z0-9][A-Za-z0-9_.-]*`), so the name
/// is a plain file name.
pub fn table_file(database: u32, model: &str, instruction: &str, version: i32, checksum: u64) -> String {
    let instruction_hash = fnv1a64_words(0xcbf2_9ce4_8422_2325, instruction.as_bytes());
    format!("{TABLE_DIR}/db{database}-{model}-{instruction_hash:016x}-v{version}-{checksum:016x}.lrt")
}

/// A stamp for temporary names no other writer shares: the clock in nanoseconds mixed with the
/// process id (two backends building in the same nanosecond still differ).
pub fn build_stamp() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ ((std::process::id() as u64) << 40)
}
