"""Auto-encoding of Document.body: lightretriever adds the vector columns (so Django only records
them in its model state), a queue and triggers; the encoder worker fills them from now on."""

import pgvector.django
from django.conf import settings
from django.db import migrations

TABLE = "library_document"


class Migration(migrations.Migration):
    dependencies = [("library", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql=[(
                        "SELECT lightretriever.lr_enable_auto_encoding(%s::regclass, 'body', %s, %s)",
                        [TABLE, settings.LIGHTRETRIEVER_DENSE_MODEL, settings.LIGHTRETRIEVER_SPARSE_MODEL],
                    )],
                    reverse_sql=[("SELECT lightretriever.lr_disable_auto_encoding(%s::regclass, drop_columns => true)", [TABLE])],
                ),
            ],
            state_operations=[
                migrations.AddField("document", "body_embedding", pgvector.django.VectorField(dimensions=384, editable=False, null=True)),
                migrations.AddField("document", "body_sparse", pgvector.django.SparseVectorField(dimensions=30522, editable=False, null=True)),
            ],
        ),
        migrations.AddIndex(
            model_name="document",
            index=pgvector.django.HnswIndex(fields=["body_embedding"], name="document_body_hnsw", opclasses=["vector_ip_ops"]),
        ),
    ]
