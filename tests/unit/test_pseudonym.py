"""cds_service.core.pseudonym: what storage keeps instead of a patient id is stable per secret and
patient, differs across secrets and patients, and does not contain the id."""
from __future__ import annotations

import stat

from hypothesis import given
from hypothesis import strategies as st

from cds_service.core.pseudonym import SECRET_FILE, load_secret, patient_key

ids = st.text(min_size=1, max_size=40)


@given(ids)
def test_the_same_patient_gives_the_same_key_under_one_secret(patient):
    assert patient_key(b"s1", patient) == patient_key(b"s1", patient)


@given(ids, ids)
def test_two_patients_give_two_keys(one, other):
    if one != other:
        assert patient_key(b"s1", one) != patient_key(b"s1", other)


@given(ids)
def test_another_secret_gives_another_key_that_does_not_show_the_id(patient):
    key = patient_key(b"s1", patient)
    assert key != patient_key(b"s2", patient)
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    if len(patient) > 3:
        assert patient not in key


def test_a_configured_secret_is_used_as_given(tmp_path):
    assert load_secret("configured", development=False, instance_path=str(tmp_path)) == b"configured"
    assert not (tmp_path / SECRET_FILE).exists()


def test_without_a_secret_production_has_none_so_the_override_window_is_off(tmp_path):
    assert load_secret(None, development=False, instance_path=str(tmp_path)) is None
    assert load_secret("", development=False, instance_path=str(tmp_path)) is None


def test_development_generates_one_secret_kept_private_and_reused(tmp_path):
    first = load_secret(None, development=True, instance_path=str(tmp_path / "instance"))
    again = load_secret(None, development=True, instance_path=str(tmp_path / "instance"))
    assert first and first == again and len(first) >= 32
    assert stat.S_IMODE((tmp_path / "instance" / SECRET_FILE).stat().st_mode) == 0o600
    assert load_secret(None, development=True, instance_path=str(tmp_path / "other")) != first
