//! Files that belong to catalog rows: removed only once the rows' removal commits.

/// Removes files once the current transaction commits (a rollback keeps them, with their rows).
pub fn remove_files_on_commit(files: Vec<String>) {
    if files.is_empty() {
        return;
    }
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, move || {
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
    });
}
