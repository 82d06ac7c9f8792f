-- lightretriever 0.9.0 → 0.10.0 (ALTER EXTENSION lightretriever UPDATE).
-- A queue is dropped with whatever depends on it: any role that may use the extension's schema
-- could create a view on a queue (no right on the queue is needed for that), and the view then
-- kept the table's owner from dropping the table or disabling its auto-encoding.
CREATE OR REPLACE FUNCTION lr_drop_auto_encoding_objects(id integer) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q name;
BEGIN
    SELECT queue_table INTO q FROM lightretriever.lr_auto_encodings a WHERE a.id OPERATOR(pg_catalog.=) lr_drop_auto_encoding_objects.id;
    DELETE FROM lightretriever.lr_auto_encodings a WHERE a.id OPERATOR(pg_catalog.=) lr_drop_auto_encoding_objects.id;
    IF q IS NOT NULL THEN
        EXECUTE pg_catalog.format('DROP TABLE IF EXISTS lightretriever.%I CASCADE', q);
    END IF;
    EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' OPERATOR(pg_catalog.||) id OPERATOR(pg_catalog.||) '_clear');
    EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' OPERATOR(pg_catalog.||) id OPERATOR(pg_catalog.||) '_enqueue');
    EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' OPERATOR(pg_catalog.||) id OPERATOR(pg_catalog.||) '_forget');
    EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' OPERATOR(pg_catalog.||) id OPERATOR(pg_catalog.||) '_truncate');
END $$;
