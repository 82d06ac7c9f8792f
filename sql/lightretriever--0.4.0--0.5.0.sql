-- lightretriever 0.4.0 → 0.5.0 (ALTER EXTENSION lightretriever UPDATE): auto-encoding triggers
-- re-enqueue a row whose vector an UPDATE erased (NULL written over it, the text unchanged: an
-- ORM saving a whole row it read before the worker wrote the vector), so nothing stays without
-- a vector. Every auto-encoded table's trigger functions and triggers are regenerated here;
-- catalog tables, queues (pending and failed rows), vectors and files are unchanged.
-- tests/e2e/tests/upgrade.rs checks that the result equals a fresh 0.5.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.5.0'" to load this file. \quit

-- Re-creates every auto-encoded table's trigger functions and triggers as this release makes them.
CREATE  FUNCTION "lr_regenerate_auto_encoding_triggers"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_regenerate_auto_encoding_triggers_wrapper';

SELECT lightretriever.lr_regenerate_auto_encoding_triggers();
