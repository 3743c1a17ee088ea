from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core.exceptions import InvalidInput

from .models import ApiKey, User, generate_api_key, hash_api_key

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
