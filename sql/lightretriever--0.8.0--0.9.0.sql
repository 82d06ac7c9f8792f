-- lightretriever 0.8.0 → 0.9.0 (ALTER EXTENSION lightretriever UPDATE). lr_search smooths the
-- scores of the fused ranking's top rows over their own graph (docs/quality.md, "Smoothing over
-- the candidates' graph"): three arguments after feedback_weight, `smoothing` (rows, default 50;
-- 0: 0.8.0's ranking), `smoothing_neighbours` (10) and `smoothing_weight` (0.5). A function's
-- arguments cannot change in place, so lr_search is dropped and created again: a view or
-- function of the user's that calls it must be dropped before the update and created again
-- after it. Nothing else changes.
-- tests/e2e/tests/upgrade.rs checks that the result equals a fresh 0.9.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.9.0'" to load this file. \quit

DROP FUNCTION lr_search(pg_catalog.regclass, text, integer, text, real, integer, text, text, text, text, text, text, integer, text, text, integer, real);
