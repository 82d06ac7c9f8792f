import json

from django.core.management.base import BaseCommand, CommandError

from library import search
from library.models import Document


class Command(BaseCommand):
    help = "Load documents from a BEIR corpus.jsonl (_id, title, text) through the ORM; --wait for their vectors."

    def add_arguments(self, parser):
        parser.add_argument("corpus")
        parser.add_argument("--limit", type=int, default=None)
        parser.add_argument("--wait", action="store_true")

    def handle(self, corpus, limit, wait, **_):
        docs = []
        with open(corpus) as f:
            for line in f:
                d = json.loads(line)
                docs.append(Document(id=int(d["_id"]), title=d["title"], body=f"{d['title']} {d['text']}"))
                if limit is not None and len(docs) == limit:
                    break
        Document.objects.bulk_create(docs)
        self.stdout.write(f"loaded {len(docs)} documents")
        if wait:
            if not search.wait_for_encoding():
                raise CommandError("the documents are still queued for encoding")
            self.stdout.write("encoded")
