"""A password hasher for the test process: argon2 at its lowest cost.

The suite makes over a thousand users, and argon2 at Django's cost takes a quarter of a
CPU second per password: minutes of a run. These hashes are argon2 hashes all the same
(`argon2$argon2id$v=19$m=8,t=1,p=1$...`); argon2 reads its cost from the hash, so the web
and worker processes the tests start (with the project's settings) check them as they would
any other, and re-hash them at Django's cost on a password log-in (`must_update`).
"""

from django.contrib.auth.hashers import Argon2PasswordHasher


class QuickArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 1
    memory_cost = 8  # KiB: argon2's least (8 per lane)
    parallelism = 1


def use_quick_hasher(settings) -> None:
    """The project's hashers, with argon2 (the first, which makes every new hash) made cheap."""
    from django.contrib.auth.hashers import get_hashers, get_hashers_by_algorithm

    default = "django.contrib.auth.hashers.Argon2PasswordHasher"
    quick = f"{__name__}.{QuickArgon2PasswordHasher.__name__}"
    settings.PASSWORD_HASHERS = [quick if path == default else path for path in settings.PASSWORD_HASHERS]
    get_hashers.cache_clear()
    get_hashers_by_algorithm.cache_clear()
