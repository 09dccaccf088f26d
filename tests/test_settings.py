"""Settings given by users (`--set KEY=VALUE`, recipe tables): parsing and validation against a dataclass."""

from __future__ import annotations

import pytest

from prunectl.cli.options import parse_assignments
from prunectl.core.spec import settings_from
from prunectl.errors import BadValueError
from prunectl.methods.l1norm import L1NormSettings


def test_assignments_read_json_values_and_keep_bare_words_as_strings():
    got = parse_assignments(["ratio=0.5", "variant=A", "skip=[16, 20]", "flag=true", "name=\"x=y\""])
    assert got == {"ratio": 0.5, "variant": "A", "skip": [16, 20], "flag": True, "name": "x=y"}


@pytest.mark.parametrize("item", ["ratio", "=0.5"])
def test_assignment_without_key_or_value_sign_is_a_one_line_error(item):
    with pytest.raises(BadValueError, match="KEY=VALUE"):
        parse_assignments([item])


def test_assignment_repeating_a_key_is_refused():
    with pytest.raises(BadValueError, match="twice"):
        parse_assignments(["ratio=0.5", "ratio=0.6"])


def test_settings_from_builds_the_dataclass_with_decoded_types():
    settings = settings_from(L1NormSettings, {"ratio": 0.5, "skip": [16, 20]}, "method 'l1-norm'")
    assert settings == L1NormSettings(ratio=0.5, skip=(16, 20))


def test_unknown_setting_names_every_valid_key():
    with pytest.raises(BadValueError) as err:
        settings_from(L1NormSettings, {"ratoi": 0.5}, "method 'l1-norm'")
    message = str(err.value)
    assert "'ratoi'" in message and "variant, ratio, layer_ratios, skip" in message and "\n" not in message


@pytest.mark.parametrize("value", ["half", True, [0.5]])
def test_wrong_type_names_the_field_and_the_expected_type(value):
    with pytest.raises(BadValueError, match="setting 'ratio' must be a number"):
        settings_from(L1NormSettings, {"ratio": value}, "method 'l1-norm'")
