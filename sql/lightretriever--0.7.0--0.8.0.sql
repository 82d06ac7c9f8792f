-- lightretriever 0.7.0 → 0.8.0 (ALTER EXTENSION lightretriever UPDATE). The event triggers see
-- the changes that reach an auto-encoded table without naming it: ALTER TABLE of an inheritance
-- parent or partitioned table (at any depth), ALTER TYPE … CASCADE of a typed table's type, DROP
-- of another object … CASCADE (a type, domain, collation, operator class; DROP OWNED).
-- - A renamed text, vector or key column is followed, as for ALTER TABLE of the table itself.
-- - Losing a text, vector or key column (or the primary key) that way is refused for a role with
--   the table owner's rights, as for the table itself; another role's command (a partitioned
--   table's owner may drop every partition's primary key) is not refused: the table loses its
--   auto-encoding, with a WARNING, and its vectors stay.
-- Before, such a rename left the table's triggers with the old name, so that its writes failed,
-- and such a drop left rows that were never encoded. So the update follows every auto-encoded
-- table once: the renamed ones work again, and those that lost such a column lose their queue
-- and triggers (a WARNING names each; their vectors are kept). lr_auto_encoding_follow takes
-- `reached` and is no longer executable by PUBLIC (the event triggers call it). Catalog tables,
-- queues, vectors and triggers of the other tables are kept.
-- tests/e2e/tests/upgrade.rs checks that the result equals a fresh 0.8.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.8.0'" to load this file. \quit

DROP FUNCTION lr_auto_encoding_follow(pg_catalog.oid);
CREATE  FUNCTION "lr_auto_encoding_follow"(
	"source" oid, /* pg_sys :: Oid */
	"reached" bool DEFAULT false /* bool */
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_auto_encoding_follow_wrapper';

CREATE OR REPLACE FUNCTION lr_auto_encoding_on_drop() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record;
BEGIN
    FOR e IN
        SELECT a.id FROM lightretriever.lr_auto_encodings a
          JOIN pg_catalog.pg_event_trigger_dropped_objects() d ON d.objid OPERATOR(pg_catalog.=) a.source::pg_catalog.oid
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid OPERATOR(pg_catalog.=) 0
    LOOP
        PERFORM lightretriever.lr_drop_auto_encoding_objects(e.id);
    END LOOP;
    IF TG_TAG OPERATOR(pg_catalog.~~) 'ALTER %' THEN
        RETURN;
    END IF;
    FOR e IN
        SELECT a.source::pg_catalog.oid AS source FROM lightretriever.lr_auto_encodings a
         WHERE EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() d
                        WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND d.objid OPERATOR(pg_catalog.=) a.source::pg_catalog.oid AND d.objsubid OPERATOR(pg_catalog.<>) 0)
            -- A primary key can go without a column (DROP OPERATOR CLASS … CASCADE); not the
            -- extension's own (a queue's, when an auto-encoding is dropped).
            OR (EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() d
                         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_constraint'::pg_catalog.regclass
                           AND d.schema_name OPERATOR(pg_catalog.<>) 'lightretriever')
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k
                                 WHERE k.conrelid OPERATOR(pg_catalog.=) a.source::pg_catalog.oid AND k.contype OPERATOR(pg_catalog.=) 'p'))
         ORDER BY a.id
    LOOP
        PERFORM lightretriever.lr_auto_encoding_follow(e.source, reached => true);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION lr_auto_encoding_on_alter() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        WITH RECURSIVE changed(relid, named) AS (
            SELECT c.objid, true FROM pg_catalog.pg_event_trigger_ddl_commands() c
             WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
            UNION
            SELECT n.relid, false FROM changed ch CROSS JOIN LATERAL (
                SELECT i.inhrelid AS relid FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) ch.relid
                UNION ALL
                SELECT t.oid FROM pg_catalog.pg_class ct JOIN pg_catalog.pg_class t ON t.reloftype OPERATOR(pg_catalog.=) ct.reltype
                 WHERE ct.oid OPERATOR(pg_catalog.=) ch.relid AND ct.relkind OPERATOR(pg_catalog.=) 'c') n
        )
        SELECT a.source::pg_catalog.oid AS source, pg_catalog.bool_or(changed.named) AS named FROM changed
          JOIN lightretriever.lr_auto_encodings a ON a.source::pg_catalog.oid OPERATOR(pg_catalog.=) changed.relid
         GROUP BY a.id, a.source
         -- The named tables first: one that refuses ends the command before any other table's
         -- auto-encoding is dropped (whose nested DROP would run lr_auto_encoding_on_drop).
         ORDER BY pg_catalog.bool_or(changed.named) DESC, a.id
    LOOP
        PERFORM lightretriever.lr_auto_encoding_follow(r.source, reached => NOT r.named);
    END LOOP;
END $$;
-- Called by the event triggers (SECURITY DEFINER); nobody else needs it.
REVOKE ALL ON FUNCTION lr_auto_encoding_follow(pg_catalog.oid, boolean) FROM PUBLIC;

DROP EVENT TRIGGER lr_auto_encoding_alter;
-- ALTER VIEW, ALTER MATERIALIZED VIEW and ALTER FOREIGN TABLE accept RENAME COLUMN of a table too;
-- ALTER TYPE … CASCADE changes the columns of a composite type's typed tables.
CREATE EVENT TRIGGER lr_auto_encoding_alter ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE', 'ALTER TYPE')
    EXECUTE FUNCTION lr_auto_encoding_on_alter();

-- The tables that an earlier release did not follow. A lock on one (a transaction left open on
-- it) is waited for 10 s at most (or the caller's shorter lock_timeout): that table is then named
-- in a WARNING, to be disabled later with lr_disable_auto_encoding, and the update goes on.
DO $$
DECLARE
    e record;
    lock_timeout_before text := pg_catalog.current_setting('lock_timeout');
BEGIN
    IF lock_timeout_before::pg_catalog.interval OPERATOR(pg_catalog.=) '0'::pg_catalog.interval
       OR lock_timeout_before::pg_catalog.interval OPERATOR(pg_catalog.>) '10 s'::pg_catalog.interval THEN
        PERFORM pg_catalog.set_config('lock_timeout', '10s', true);
    END IF;
    FOR e IN SELECT a.id, a.source::pg_catalog.oid AS source FROM lightretriever.lr_auto_encodings a ORDER BY a.id LOOP
        BEGIN
            PERFORM lightretriever.lr_auto_encoding_follow(e.source, reached => false);
        EXCEPTION
            WHEN dependent_objects_still_exist THEN
                BEGIN
                    PERFORM lightretriever.lr_drop_auto_encoding_objects(e.id);
                    RAISE WARNING 'lightretriever: % lost a column or key it is auto-encoded by before this update: its auto-encoding is disabled, its vectors are kept',
                        e.source::pg_catalog.regclass USING DETAIL = SQLERRM;
                EXCEPTION WHEN OTHERS THEN
                    RAISE WARNING 'lightretriever: % lost a column or key it is auto-encoded by before this update, and its auto-encoding could not be disabled: %',
                        e.source::pg_catalog.regclass, SQLERRM
                        USING HINT = 'Disable it with lightretriever.lr_disable_auto_encoding.';
                END;
            WHEN OTHERS THEN
                RAISE WARNING 'lightretriever: the columns of % could not be checked: %', e.source::pg_catalog.regclass, SQLERRM;
        END;
    END LOOP;
    PERFORM pg_catalog.set_config('lock_timeout', lock_timeout_before, true);
END $$;
