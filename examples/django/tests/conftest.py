import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
django.setup()
