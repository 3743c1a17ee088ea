from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core.exceptions import InvalidInput, QuotaExceeded

from .models import ApiKey, Quota, User, generate_api_key, hash_api_key

DUPLICATE_EMAIL_MESSAGE = "A user with this email address already exists."


@transaction.atomic
def user_register(*, email: str, password: str, full_name: str = "") -> User:
    """Create a user and send the welcome email once the row is committed."""
    from .tasks import send_welcome_email

    email = User.objects.normalize_email(email).lower()
    if User.objects.filter(email__iexact=email).exists():
        raise InvalidInput({"email": [DUPLICATE_EMAIL_MESSAGE]})
    candidate = User(email=email, full_name=full_name)
    try:
        validate_password(password, user=candidate)
    except DjangoValidationError as exc:
        raise InvalidInput({"password": list(exc.messages)}) from None
    try:
        # A concurrent registration of the same address can pass the check above; the
        # unique index settles it, and the loser gets the same answer as a plain duplicate.
        with transaction.atomic():
            user = User.objects.create_user(email=email, password=password, full_name=full_name)
    except IntegrityError:
        if not User.objects.filter(email__iexact=email).exists():
            raise
        raise InvalidInput({"email": [DUPLICATE_EMAIL_MESSAGE]}) from None
    send_welcome_email.delay_on_commit(user.pk)
    return user


def user_update(*, user: User, full_name: str) -> User:
    user.full_name = full_name
    user.save(update_fields=["full_name"])
    return user


def api_key_create(*, user: User, name: str) -> tuple[ApiKey, str]:
    """Return the key row and the raw key; the raw key is never stored or shown again."""
    prefix, raw_key = generate_api_key()
    api_key = ApiKey.objects.create(user=user, name=name, prefix=prefix, key_hash=hash_api_key(raw_key))
    return api_key, raw_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


# --- Quotas -----------------------------------------------------------------------------------
# A user's own figures are read on every submission, so they are cached; saving or deleting a
# Quota row drops the entry (quota_forget), and the timeout only bounds a missed drop.
QUOTA_CACHE_SECONDS = 300


def user_cache_key(user, name: str) -> str:
    """A cache key of this user's: the id and the joining time (a recreated database reuses ids)."""
    return f"accounts:{name}:{user.pk}:{int(user.date_joined.timestamp() * 1_000_000)}"


def quota_limits(user) -> dict[str, int]:
    """The user's quotas: their own figures where staff set them, settings.QUOTAS otherwise."""
    key = user_cache_key(user, "quota")
    own = cache.get(key)
    if own is None:
        row = Quota.objects.filter(user=user).values(*settings.QUOTAS).first() or {}
        own = {name: value for name, value in row.items() if value is not None}
        cache.set(key, own, QUOTA_CACHE_SECONDS)
    return {**settings.QUOTAS, **own}


def quota_forget(user) -> None:
    cache.delete(user_cache_key(user, "quota"))


def quota_check(user, quota: str, *, current: int, adding: int = 1, what: str, error=QuotaExceeded) -> None:
    """Refuse (QuotaExceeded, or `error`) when `adding` more would take `current` past the quota."""
    limit = quota_limits(user)[quota]
    if current + adding > limit:
        raise error(
            f"Quota reached for {what}: at most {limit:,} per user; you have {current:,}"
            + (f" and asked for {adding:,} more." if adding > 1 else "."),
            quota=quota,
            limit=limit,
            current=current,
        )
