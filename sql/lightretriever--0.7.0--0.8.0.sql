-- lightretriever 0.7.0 → 0.8.0 (ALTER EXTENSION lightretriever UPDATE). The event triggers see
-- the changes that reach an auto-encoded table without naming it:
-- - ALTER TABLE of an inheritance parent (at any depth) and ALTER TYPE … CASCADE of a typed
--   table's type: a renamed text, vector or key column is followed, dropping or retyping one is
--   refused, as for ALTER TABLE of the table itself;
-- - a text, vector or key column (or the primary key) dropped with another object (DROP TYPE,
--   DOMAIN, COLLATION … CASCADE, DROP OWNED … CASCADE): the table's auto-encoding goes, with a
--   WARNING, its vectors stay.
-- Before, such a rename left the table's triggers with the old name, so that its writes failed,
-- and such a drop left rows that were never encoded: the update follows every auto-encoded table
-- once, and disables (with a WARNING) those that lost such a column. lr_auto_encoding_follow is
-- no longer executable by PUBLIC (the event triggers call it). Nothing else changes: catalog
-- tables, queues, vectors and triggers are kept.
-- tests/e2e/tests/upgrade.rs checks that the result equals a fresh 0.8.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.8.0'" to load this file. \quit

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
        SELECT a.id, a.source::pg_catalog.oid AS source FROM lightretriever.lr_auto_encodings a
         WHERE EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() d
                        WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND d.objid OPERATOR(pg_catalog.=) a.source::pg_catalog.oid AND d.objsubid OPERATOR(pg_catalog.<>) 0)
            -- A primary key can go without a column (DROP OPERATOR CLASS … CASCADE).
            OR (EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() d
                         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_constraint'::pg_catalog.regclass)
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k
                                 WHERE k.conrelid OPERATOR(pg_catalog.=) a.source::pg_catalog.oid AND k.contype OPERATOR(pg_catalog.=) 'p'))
    LOOP
        BEGIN
            PERFORM lightretriever.lr_auto_encoding_follow(e.source);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            PERFORM lightretriever.lr_drop_auto_encoding_objects(e.id);
            RAISE WARNING 'lightretriever: % lost a column or key it is auto-encoded by to %: its auto-encoding is disabled, its vectors are kept',
                e.source::pg_catalog.regclass, TG_TAG USING DETAIL = SQLERRM;
        END;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION lr_auto_encoding_on_alter() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        WITH RECURSIVE changed(relid) AS (
            SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c
             WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
            UNION
            SELECT n.relid FROM changed ch CROSS JOIN LATERAL (
                SELECT i.inhrelid AS relid FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) ch.relid
                UNION ALL
                SELECT t.oid FROM pg_catalog.pg_class ct JOIN pg_catalog.pg_class t ON t.reloftype OPERATOR(pg_catalog.=) ct.reltype
                 WHERE ct.oid OPERATOR(pg_catalog.=) ch.relid AND ct.relkind OPERATOR(pg_catalog.=) 'c') n
        )
        SELECT DISTINCT a.source::pg_catalog.oid AS source FROM changed
          JOIN lightretriever.lr_auto_encodings a ON a.source::pg_catalog.oid OPERATOR(pg_catalog.=) changed.relid
    LOOP
        PERFORM lightretriever.lr_auto_encoding_follow(r.source);
    END LOOP;
END $$;
-- Called by the event triggers (SECURITY DEFINER); nobody else needs it.
REVOKE ALL ON FUNCTION lr_auto_encoding_follow(pg_catalog.oid) FROM PUBLIC;

DROP EVENT TRIGGER lr_auto_encoding_alter;
-- ALTER VIEW, ALTER MATERIALIZED VIEW and ALTER FOREIGN TABLE accept RENAME COLUMN of a table too;
-- ALTER TYPE … CASCADE changes the columns of a composite type's typed tables.
CREATE EVENT TRIGGER lr_auto_encoding_alter ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE', 'ALTER TYPE')
    EXECUTE FUNCTION lr_auto_encoding_on_alter();

-- The tables that an earlier release did not follow.
DO $$
DECLARE
    e record;
BEGIN
    FOR e IN SELECT a.id, a.source::pg_catalog.oid AS source FROM lightretriever.lr_auto_encodings a ORDER BY a.id LOOP
        BEGIN
            PERFORM lightretriever.lr_auto_encoding_follow(e.source);
        EXCEPTION
            WHEN dependent_objects_still_exist THEN
                PERFORM lightretriever.lr_drop_auto_encoding_objects(e.id);
                RAISE WARNING 'lightretriever: % lost a column or key it is auto-encoded by before this update: its auto-encoding is disabled, its vectors are kept',
                    e.source::pg_catalog.regclass USING DETAIL = SQLERRM;
            WHEN OTHERS THEN
                RAISE WARNING 'lightretriever: the columns of % could not be checked: %', e.source::pg_catalog.regclass, SQLERRM;
        END;
    END LOOP;
END $$;
