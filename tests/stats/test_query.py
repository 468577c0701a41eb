"""The query language: what parses, what is refused, and how the refusal reads."""

import json
import re
import shlex

import pytest

from linkage.errors import InputError
from stats.query import parse_query, parse_query_json


def parse(protocol, text):
    return parse_query(protocol, shlex.split(text))


def test_a_query_parses_and_prints_back_the_same(protocol):
    spec = parse(
        protocol, "count --by region,member:police --where member:police,msd --where 'weeks_supported>=10' --rho 0.05"
    )
    assert spec.kind == "count"
    assert [c.name for c in spec.by] == ["region", "member:police"]
    assert [c.text() for c in spec.where] == ["member:police=true", "member:msd=true", "weeks_supported>=10"]
    assert parse(protocol, spec.text()) == spec
    assert parse_query_json(protocol, json.loads(json.dumps(spec.to_json()))) == spec


def test_categories_match_the_protocol_whatever_the_case(protocol):
    spec = parse(
        protocol, "mean housed_within_90_days --where region=auckland,OTAGO --where nonmember:police --epsilon 1"
    )
    assert spec.where[0].values == ("Auckland", "Otago")
    assert spec.where[1].values == (False,)
    assert spec.cost.measure == "epsilon"


def test_quantile_defaults_to_the_median(protocol):
    assert parse(protocol, "quantile months_in_nz --rho 0.1").q == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no query given"),
        ("histogram --rho 0.1", "unknown query kind 'histogram'; use one of count, sum, mean, quantile, overlap"),
        ("count", "say what the query may spend, e.g. --rho 0.05"),
        ("count --by city --rho 0.1", "unknown attribute 'city'; the protocol declares region"),
        ("count --where region=Mars --rho 0.1", "category 'Mars' is not declared in the protocol"),
        ("sum region --rho 0.1", "region is categorical and has no bounds to sum over; use `count --by region`"),
        ("sum --rho 0.1", "sum needs an attribute"),
        ("count region --rho 0.1", "count takes no attribute"),
        ("quantile housed_within_90_days --rho 0.1", "a quantile needs an integer attribute"),
        ("quantile months_in_nz --q 1.5 --rho 0.1", "--q must be between 0 and 1"),
        ("count --by police_contacts --rho 0.1", "the protocol declares none for it; give their lower edges"),
        ("count --by 'police_contacts[0,40]' --rho 0.1", "the lower edges must rise within police_contacts's bounds"),
        ("count --by 'region[1,2]' --rho 0.1", "only an integer attribute is grouped by bins; region is categorical"),
        ("sum member:police --rho 0.1", "count them with `count --by member:police`"),
        ("mean shared --rho 0.1", "count them with `count --by shared`"),
        ("quantile member:msd --rho 0.1", "it is not an outcome to quantile"),
        (
            "count --by region,benefit_type,offence_category,housed_within_90_days,police_contacts[0,1,2,3,4,5] "
            "--rho 0.1",
            "more than the 5000",
        ),
        ("count --where region>=3 --rho 0.1", ">= compares numbers, and region is categorical"),
        ("count --where member:nzdf --rho 0.1", "'nzdf' is not a party of the protocol"),
        ("count --where weeks_supported>=ten --rho 0.1", "'ten' is not a whole number"),
        ("count --where region --rho 0.1", "write COLUMN=VALUE"),
        ("count --rho 0.1 --colour red", "unexpected '--colour' in the query"),
        ("count --rho", "--rho needs a value"),
        ("count --rho -1", "rho must be above 0"),
        ("overlap --by member:msd --rho 0.1", "overlap already splits by membership"),
    ],
)
def test_bad_queries_are_refused_with_a_message_that_names_the_fix(protocol, text, message):
    with pytest.raises(InputError, match=re.escape(message)):
        parse(protocol, text)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "a query is a JSON object"),
        ({"kind": "count", "cost": {"rho": 0.1}, "colour": 1}, "unknown query key(s) colour"),
        ({"kind": "count", "by": "region", "cost": {"rho": 0.1}}, '"by" must be a list of strings'),
        ({"kind": "count", "cost": 0.1}, '"cost" must be an object'),
        ({"kind": 3, "cost": {"rho": 0.1}}, '"kind" (and "attribute", if given) must be strings'),
    ],
)
def test_malformed_json_queries_are_refused(protocol, document, message):
    with pytest.raises(InputError, match=re.escape(message)):
        parse_query_json(protocol, document)


def test_a_json_query_file_is_read(protocol, tmp_path):
    path = tmp_path / "q.json"
    path.write_text('{"kind": "overlap", "by": ["region"], "cost": {"rho": 0.2}}')
    spec = parse_query(protocol, [str(path)])
    assert spec.kind == "overlap" and spec.by[0].name == "region"
    path.write_text("{")
    with pytest.raises(InputError, match="not a JSON or YAML query"):
        parse_query(protocol, [str(path)])


def test_a_yaml_query_file_is_read_too(protocol, tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("kind: mean\nattribute: weeks_supported\nwhere: [shared]\ncost: {rho: 0.1}\n")
    spec = parse_query(protocol, [str(path)])
    assert spec.text() == "mean weeks_supported --where shared=true --rho 0.1"


@pytest.mark.parametrize(
    "text", ["count --where 'region=Auckland --rho 0.1", 'count --rho 0.1 "', "count --rho 0.1 \\"]
)
def test_a_query_that_cannot_be_split_into_words_is_an_input_error(text):
    from stats.query import split_query

    with pytest.raises(InputError, match="close every quote and do not end it with a backslash"):
        split_query(text)


def test_integer_attributes_group_by_the_protocols_bins_or_the_querys(protocol):
    declared = parse(protocol, "count --by weeks_supported --rho 0.1").by[0]
    assert declared.keys == ("0-12", "13-25", "26-38", "39-52", None)
    given = parse(protocol, "count --by 'police_contacts[0,1,5]',region --rho 0.1")
    assert [c.name for c in given.by] == ["police_contacts[0,1,5]", "region"]
    assert given.by[0].keys == ("0", "1-4", "5-30", None)
    assert parse(protocol, given.text()) == given
    assert parse_query_json(protocol, json.loads(json.dumps(given.to_json()))) == given
    assert parse(protocol, "count --by 'police_contacts[3,10]' --rho 0.1").by[0].bins == (0, 3, 10), "lower added"


def test_a_word_that_names_a_file_is_read_only_when_files_are_allowed(protocol, tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("kind: count\ncost: {rho: 0.1}\nsecret_column: 1\n")
    with pytest.raises(InputError, match="unknown query key"):
        parse_query(protocol, [str(path)])
    with pytest.raises(InputError, match="unknown query kind") as refused:
        parse_query(protocol, [str(path)], files=False)
    assert "secret_column" not in refused.value.message


def test_integer_conditions_far_outside_the_bounds_are_kept_within_what_polars_can_compare(protocol):
    spec = parse(protocol, "count --where weeks_supported>=99999999999999999999999 --rho 0.1")
    assert spec.where[0].values == (53,)
