from django.core.management.base import BaseCommand

from library import search


class Command(BaseCommand):
    help = "Search the documents: dense (lr_encode_query), hybrid (lr_search), optionally reranked (lr_rerank). Prints id, score, title."

    def add_arguments(self, parser):
        parser.add_argument("query")
        parser.add_argument("-k", type=int, default=5)
        parser.add_argument("--mode", choices=["dense", "hybrid"], default="dense")
        parser.add_argument("--rerank", action="store_true", help="rerank the k hits with the reranker")

    def handle(self, query, k, mode, rerank, **_):
        if mode == "dense":
            hits = [(d, -d.distance) for d in search.dense(query, k)]
        else:
            hits = [(d, d.score) for d in search.hybrid(query, k)]
        if rerank:
            by_id = {d.id: d for d, _ in hits}
            hits = [(by_id[i], score) for i, score in search.rerank(query, [d.id for d, _ in hits])]
        for doc, score in hits:
            self.stdout.write(f"{doc.id}\t{score:.4f}\t{doc.title}")
