//! Names of the rows lr-eval prints (its table, and `system` in its `--json`), for the checks
//! that look rows up by name: the e2e quality test runs each system through SQL and compares.

pub const FULL: &str = "full-query dense";
pub const UNTRAINED: &str = "lookup dense (untrained table)";
pub const FITTED: &str = "lookup dense (fitted table)";
pub const SPARSE_COUNTS: &str = "sparse (doc model, count queries)";
pub const SPARSE_IDF: &str = "sparse (doc model, idf·count queries)";
pub const HYBRID: &str = "hybrid (fitted lookup 0.7 + idf·count sparse 0.3)";
pub const HYBRID_COUNTS: &str = "hybrid (fitted lookup 0.7 + count sparse 0.3)";
pub const LR_SEARCH_DEFAULT: &str = "lr_search default: z-score + smoothing 50 rows (fitted lookup 0.7 + idf·count sparse 0.3)";
pub const UNSMOOTHED_DEFAULT: &str = "hybrid, z-score without smoothing, 0.8.0's default (fitted lookup 0.7 + idf·count sparse 0.3)";
pub const RRF: &str = "hybrid, reciprocal rank k=60 (fitted lookup 0.5 + idf·count sparse 0.5)";
pub const MINMAX_TOP_100: &str = "hybrid, min-max over each side's top 100 (fitted lookup 0.7 + idf·count sparse 0.3)";
pub const MINMAX_FEEDBACK: &str = "hybrid, min-max + feedback 3 rows 0.5 (fitted lookup + idf·count sparse)";
pub const ZSCORE_FEEDBACK: &str = "hybrid, z-score + feedback 3 rows 0.5 (fitted lookup + idf·count sparse)";
pub const FULL_HYBRID_Z: &str = "hybrid, z-score (full dense 0.7 + idf·count sparse 0.3)";
