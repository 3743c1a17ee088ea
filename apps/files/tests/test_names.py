import pytest
from django.utils.text import get_valid_filename

from apps.files.models import MAX_KEY_NAME_BYTES, clean_original_name, sanitize_file_name


@pytest.mark.parametrize(
    ("client_name", "key_name"),
    [
        ("report.csv", "report.csv"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\config", "config"),
        ("/absolute/path/data.json", "data.json"),
        ("evil\x00.txt", "evil.txt"),
        ("\x00\x00", "file"),
        ("line\r\nbreak\x1b[31m.txt", "line_break_31m.txt"),
        ("..", "file"),
        ("...hidden", "hidden"),
        (".bashrc", "bashrc"),
        ("", "file"),
        ("Quarterly report (final).pdf", "Quarterly_report_final.pdf"),
        ("résumé.pdf", "résumé.pdf"),
        ("invoice\u202etxt.exe", "invoice_txt.exe"),
        ("a/b/../..", "file"),
    ],
)
def test_client_names_become_one_safe_key_segment(client_name, key_name):
    assert sanitize_file_name(client_name) == key_name


@pytest.mark.parametrize("client_name", ["x" * 5000 + ".csv", "é" * 300 + ".tar.gz", "名" * 200])
def test_very_long_names_are_cut_to_the_byte_limit_keeping_the_extension(client_name):
    key_name = sanitize_file_name(client_name)
    assert 0 < len(key_name.encode()) <= MAX_KEY_NAME_BYTES
    assert key_name.endswith(client_name.rsplit(".", 1)[-1] if "." in client_name else "名")
    key_name.encode().decode()  # never a split multi-byte character


def test_a_very_long_extension_is_not_kept_apart():
    assert sanitize_file_name("name." + "e" * 500) == ("name." + "e" * 500)[:MAX_KEY_NAME_BYTES]


@pytest.mark.parametrize("client_name", ["../../etc/passwd", "évil\x00 name?.csv", "a" * 400, "...", "Ω≈ç√ file"])
def test_django_leaves_sanitised_names_unchanged(client_name):
    key_name = sanitize_file_name(client_name)
    assert get_valid_filename(key_name) == key_name


def test_original_names_keep_what_the_client_sent_minus_control_characters():
    assert clean_original_name("../../etc/passwd") == "../../etc/passwd"
    assert clean_original_name(" quarterly\x00 report\u202e.csv\n") == "quarterly report.csv"
    assert len(clean_original_name("x" * 1000)) == 255
    assert clean_original_name("\x00\x01") == "file"
