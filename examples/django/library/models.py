from django.db import models
from pgvector.django import HnswIndex, SparseVectorField, VectorField


class Document(models.Model):
    """A document whose `body` lightretriever keeps encoded (migration 0002).

    `body_embedding` and `body_sparse` are written by lightretriever's encoder worker, never by
    the app: they are added by lr_enable_auto_encoding, not by Django's schema editor, and
    save() leaves them out of its UPDATEs.
    """

    AUTO_ENCODED = ("body_embedding", "body_sparse")

    id = models.BigAutoField(primary_key=True)
    title = models.TextField()
    body = models.TextField(null=True)
    body_embedding = VectorField(dimensions=384, null=True, editable=False)
    body_sparse = SparseVectorField(dimensions=30522, null=True, editable=False)

    class Meta:
        indexes = [HnswIndex(name="document_body_hnsw", fields=["body_embedding"], opclasses=["vector_ip_ops"])]

    def save(self, *args, **kwargs):
        # Django's save() writes every column. An instance read before the worker wrote its
        # vector holds None, and writing that back would erase the vector for good (the text did
        # not change, so nothing re-encodes it): updates name the app's own columns only.
        if not self._state.adding and kwargs.get("update_fields") is None and not kwargs.get("force_insert"):
            kwargs["update_fields"] = [
                f.name for f in self._meta.concrete_fields if not f.primary_key and f.name not in self.AUTO_ENCODED
            ]
        super().save(*args, **kwargs)

    def __str__(self):
        return f"{self.id} {self.title}"
