"""Set-up of the stock baseline (bench/stock), run by bench/run.py in its own process.

    STOCK_DATABASE_URL=postgres://... python -m bench.stock.prepare --rows 1000000

Creates the schema `stock` in the bench's database, migrates the stock project into it,
makes its one user with a fresh DRF token, and fills the item table up to --rows with one
server-side INSERT (then ANALYZE; the harness VACUUMs after its writes). Prints one JSON line.
"""

import argparse
import json
import os
import sys

import django
import psycopg

USERNAME = "bench-stock"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.stock.settings")
    url = os.environ["STOCK_DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS stock")
    django.setup()

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.authtoken.models import Token

    call_command("migrate", "--noinput", verbosity=0)
    user = User.objects.filter(username=USERNAME).first() or User.objects.create_user(USERNAME)
    Token.objects.filter(user=user).delete()
    token = Token.objects.create(user=user)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM items_item WHERE kind <> 'seeded'")
        cursor.execute("SELECT count(*) FROM items_item")
        rows = cursor.fetchone()[0]
        if rows < args.rows:
            cursor.execute(
                """
                INSERT INTO items_item (owner_id, kind, title, status, payload, created_at)
                SELECT %s, 'seeded', 'Item ' || n, 'succeeded', '{"echo": 1}'::jsonb,
                       now() - make_interval(secs => n)
                FROM generate_series(%s::bigint, %s::bigint) AS n
                """,
                [user.pk, rows + 1, args.rows],
            )
        cursor.execute("ANALYZE items_item")
        cursor.execute("SELECT count(*) FROM items_item")
        rows = cursor.fetchone()[0]
    print(json.dumps({"token": token.key, "user_id": user.pk, "rows": rows}))


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
