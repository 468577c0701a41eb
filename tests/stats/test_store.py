"""The statistics store on SQLite and (with PPRL_TEST_DATABASE_URL) PostgreSQL, and attribute files."""

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import delete, update

from linkage.errors import BudgetExceeded, Conflict, InputError, NotFound, PprlError
from linkage.token_files import token_set_sha256
from stats.budget import Loss
from stats.store import StatsStore, read_attributes
from tests.helpers import schema_suffix

HEADER = "token,consent,region,benefit_type,weeks_supported\n"


def token(n):
    return f"{n:032x}"


@pytest.fixture
def stats(database_url, tmp_path):
    created = StatsStore(tmp_path / "data", database_url, schema=f"pprl_stats_t{schema_suffix()}")
    yield created
    created.destroy()


@pytest.fixture
def project(stats, protocol):
    stats.register_project("p1", protocol, {"msd": hashlib.sha256(b"pprl_msd").hexdigest()})
    return "p1"


def receive(stats, text):
    path = stats.incoming_path()
    path.write_text(text)
    return path, hashlib.sha256(text.encode()).hexdigest()


def test_attributes_files_are_typed_and_checked_whole(protocol, tmp_path):
    path = tmp_path / "attributes.csv"
    path.write_text(HEADER + f"{token(1)},true,Auckland,jobseeker,12\n{token(2)},false,,,\n")
    rows = read_attributes(protocol, "msd", path)
    assert [(r.token, r.consent, dict(r.values)) for r in rows] == [
        (token(1), True, {"region": "Auckland", "benefit_type": "jobseeker", "weeks_supported": 12}),
        (token(2), False, {"region": None, "benefit_type": None, "weeks_supported": None}),
    ]
    path.write_text(HEADER + f"{token(1)},yes,Mars,jobseeker,99\n{token(1)},true,Auckland,none,1\n{token(3)},true\n")
    with pytest.raises(InputError, match="4 problem") as caught:
        read_attributes(protocol, "msd", path)
    assert caught.value.problems == (
        "line 2, column 'region': not one of the categories Northland, Auckland, Waikato, Bay of Plenty, "
        "Wellington, Canterbury, Otago, Southland, Other",
        "line 2, column 'weeks_supported': outside the protocol's bounds 0..52",
        "line 3, column 'token': also on line 2; each token appears once",
        "line 4: 2 columns where the header has 5",
    )
    path.write_text("token,consent\n")
    with pytest.raises(InputError, match="must send token,consent,region,benefit_type,weeks_supported"):
        read_attributes(protocol, "msd", path)
    path.write_bytes(HEADER.encode() + b"\xff\xfe\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_attributes(protocol, "msd", path)
    path.write_text(HEADER)
    with pytest.raises(InputError, match="has no records"):
        read_attributes(protocol, "msd", path)


def test_credentials_and_projects_are_its_own(stats, project):
    found = stats.authenticate("pprl_msd")
    assert (found.role, found.project_id, found.party) == ("party", project, "msd")
    assert stats.authenticate("pprl_other") is None
    assert stats.protocol(project).name == "nz-shared-clients-2026"
    with pytest.raises(NotFound):
        stats.protocol("p2")


def test_attributes_upload_is_idempotent_and_consent_is_looked_up(stats, project):
    stats.register_encodings(project, "msd", token_set_sha256([token(1), token(2)]), 2)
    text = HEADER + f"{token(1)},true,Auckland,jobseeker,12\n{token(2)},false,Otago,none,0\n"
    path, sha = receive(stats, text)
    assert stats.accept_attributes(project, "msd", path, sha, replace=False).status == "created"
    assert not path.exists()
    path, sha = receive(stats, text)
    assert stats.accept_attributes(project, "msd", path, sha, replace=False).status == "unchanged"
    changed = text.replace(",false,", ",true,")
    path, sha2 = receive(stats, changed)
    with pytest.raises(Conflict, match="--replace"):
        stats.accept_attributes(project, "msd", path, sha2, replace=False)
    consent = stats.consent(project, [("msd", token(1)), ("msd", token(2)), ("msd", token(3)), ("police", token(1))])
    assert consent == {("msd", token(1)): True, ("msd", token(2)): False}
    path, sha2 = receive(stats, changed)
    assert stats.accept_attributes(project, "msd", path, sha2, replace=True).status == "replaced"
    assert stats.consent(project, [("msd", token(2))]) == {("msd", token(2)): True}
    assert stats.attribute_counts(project) == {"msd": 2}
    assert stats.attribute_values(project, "msd")[token(1)] == {
        "region": "Auckland",
        "benefit_type": "jobseeker",
        "weeks_supported": 12,
    }


def test_a_batchs_attributes_are_merged_only_when_they_make_the_encodings_tokens(stats, project):
    row = {1: "true,Auckland,jobseeker,12", 2: "false,Otago,none,0", 3: "true,Waikato,none,3"}
    stats.register_encodings(project, "msd", token_set_sha256([token(1), token(2)]), 2)
    path, sha = receive(stats, HEADER + f"{token(1)},{row[1]}\n{token(2)},{row[2]}\n")
    stats.accept_attributes(project, "msd", path, sha, replace=False)
    # The linkage side took a batch: token 2 withdrawn, token 3 added, token 1 corrected in place.
    stats.withdraw_tokens(project, "msd", [token(2)], token_set_sha256([token(1), token(3)]), 2)
    wrong = HEADER + f"{token(3)},{row[3]}\n{token(4)},{row[3]}\n"
    path, sha = receive(stats, wrong)
    with pytest.raises(Conflict, match="would hold 3 tokens that are not the 2 tokens of its encodings"):
        stats.merge_attributes(project, "msd", path, sha)
    assert not path.exists()
    assert set(stats.attribute_values(project, "msd")) == {token(1)}, "a refused batch changes nothing"
    batch = HEADER + f"{token(1)},false,Auckland,jobseeker,13\n{token(3)},{row[3]}\n"
    path, sha = receive(stats, batch)
    assert stats.merge_attributes(project, "msd", path, sha).status == "merged"
    assert stats.attribute_values(project, "msd")[token(1)]["weeks_supported"] == 13
    assert set(stats.attribute_values(project, "msd")) == {token(1), token(3)}
    assert stats.consent(project, [("msd", token(1))]) == {("msd", token(1)): False}
    path, sha = receive(stats, batch)
    assert stats.merge_attributes(project, "msd", path, sha).status == "unchanged"
    stats._check_consistent(project)  # the attributes are those of the encodings again


def test_a_batchs_attributes_need_a_list_to_join(stats, project):
    stats.register_encodings(project, "msd", token_set_sha256([token(1)]), 1)
    path, sha = receive(stats, HEADER + f"{token(1)},true,Auckland,jobseeker,12\n")
    with pytest.raises(Conflict, match="upload its whole list first"):
        stats.merge_attributes(project, "msd", path, sha)


def test_the_mapping_is_replaced_whole(stats, project):
    assert stats.mapping_run(project) is None
    stats.replace_mapping(project, 1, [[(1, "msd", token(1)), (1, "police", token(2))]])
    assert stats.mapping_run(project) == 1
    assert stats.replace_mapping(project, 2, iter([[(1, "msd", token(3))], [(1, "haven", token(4))], []])) == 2
    assert stats.mapping_run(project) == 2
    assert stats.mapping(project) == [(1, "haven", token(4)), (1, "msd", token(3))]


def test_a_failed_mapping_copy_leaves_the_old_one(stats, project):
    stats.replace_mapping(project, 1, [[(1, "msd", token(1))]])

    def broken():
        yield [(1, "msd", token(5))]
        raise RuntimeError("linkage store went away")

    with pytest.raises(RuntimeError):
        stats.replace_mapping(project, 2, broken())
    assert stats.mapping_run(project) == 1
    assert stats.mapping(project) == [(1, "msd", token(1))]


def test_the_ledger_records_releases_and_refusals_change_nothing(stats, project):
    with stats.spend(project, "analyst", "count --rho 0.25", Loss.of(rho=0.25)) as receipt:
        receipt.mechanism = "OpenDP discrete Gaussian, scale 1.414"
    with pytest.raises(BudgetExceeded, match="only ρ=0.75 of the project's ρ=1 is left"):
        with stats.spend(project, "analyst", "count --rho 0.8", Loss.of(rho=0.8)):
            pytest.fail("the body must not run when the budget cannot pay")
    with pytest.raises(RuntimeError):
        with stats.spend(project, "analyst", "count --rho 0.1", Loss.of(rho=0.1)):
            raise RuntimeError("the release failed")
    budget = stats.budget(project)
    assert [(e.number, e.query, e.mechanism) for e in budget.entries] == [
        (1, "count --rho 0.25", "OpenDP discrete Gaussian, scale 1.414")
    ]
    assert budget.remaining == Loss.of(rho=0.75)
    assert budget.entries[0].at.tzinfo is not None


def test_concurrent_queries_never_overspend_together(stats, project):
    barrier = threading.Barrier(6)

    def ask() -> int:
        barrier.wait()
        done = 0
        for _ in range(8):
            try:
                with stats.spend(project, "analyst", "count --rho 0.03", Loss.of(rho=0.03)):
                    time.sleep(0.001)
                    done += 1
            except BudgetExceeded:
                pass
        return done

    with ThreadPoolExecutor(6) as pool:
        done = sum(pool.map(lambda _: ask(), range(6)))
    budget = stats.budget(project)
    assert done == len(budget.entries) == 33, "0.03 fits 33 times in 1, however the queries interleave"
    assert [e.number for e in budget.entries] == list(range(1, 34))
    assert budget.spent.amount <= 1


def spend(stats, project, rho, who="analyst"):
    with stats.spend(project, who, f"count --rho {rho}", Loss.of(rho=rho)) as receipt:
        receipt.mechanism = "OpenDP discrete Gaussian"


def tamper(stats, statement):
    """Change the database behind the store's back, as someone with the files would."""
    with stats._engine.begin() as conn:
        conn.execute(statement)


@pytest.mark.parametrize(
    "damage",
    [
        lambda tables: update(tables["releases"]).where(tables["releases"].c.number == 2).values(query="count"),
        lambda tables: update(tables["releases"]).where(tables["releases"].c.number == 1).values(loss='{"rho": 0.01}'),
        lambda tables: delete(tables["releases"]).where(tables["releases"].c.number == 2),
        lambda tables: delete(tables["releases"]).where(tables["releases"].c.number == 3),
        lambda tables: delete(tables["ledger_heads"]),
    ],
    ids=["edit-query", "edit-cost", "delete-middle", "delete-last", "delete-head"],
)
def test_a_ledger_edited_or_cut_at_rest_releases_nothing_more(stats, project, damage):
    """Issue 15 row 7: deleting a release row gave the project its budget back."""
    for _ in range(3):
        spend(stats, project, 0.3)
    assert stats.budget(project).remaining == Loss.of(rho=0.1)
    tamper(stats, damage(stats._metadata.tables))
    with pytest.raises(PprlError, match=f"the ledger of project {project}") as caught:
        spend(stats, project, 0.3)
    assert caught.value.code == "tampered"
    with pytest.raises(PprlError, match="restored from a backup"):
        stats.budget(project)
    assert not stats.verify_ledgers()[0].ok


def test_ledgers_verify_and_their_heads_move_with_each_release(stats, project):
    assert [check.ok for check in stats.verify_ledgers()] == [True]
    spend(stats, project, 0.1)
    first = stats.verify_ledgers()[0]
    spend(stats, project, 0.1)
    second = stats.verify_ledgers()[0]
    assert (first.rows, second.rows) == (1, 2) and first.head != second.head


def test_an_analyst_of_their_own_spends_within_their_budget_and_the_projects(stats, project):
    stats.register_analyst(project, "ana", hashlib.sha256(b"pprl_ana").hexdigest(), {"rho": 0.3})
    stats.register_analyst(project, "ben", hashlib.sha256(b"pprl_ben").hexdigest(), None)
    found = stats.authenticate("pprl_ana")
    assert (found.role, found.name, found.party) == ("analyst", "ana", None)
    with pytest.raises(Conflict, match="has an analyst named 'ana' already"):
        stats.register_analyst(project, "ana", hashlib.sha256(b"pprl_x").hexdigest(), None)
    with pytest.raises(InputError, match="within its total ρ=1"):
        stats.register_analyst(project, "cat", hashlib.sha256(b"pprl_cat").hexdigest(), {"rho": 2})
    with pytest.raises(InputError, match="in the project's measure"):
        stats.register_analyst(project, "cat", hashlib.sha256(b"pprl_cat").hexdigest(), {"epsilon": 0.5})
    spend(stats, project, 0.2, who="analyst:ana")
    with pytest.raises(BudgetExceeded, match="only ρ=0.1 of analyst:ana's own budget ρ=0.3 is left"):
        spend(stats, project, 0.2, who="analyst:ana")
    spend(stats, project, 0.75, who="analyst:ben")
    with pytest.raises(BudgetExceeded, match="of the project's ρ=1 is left"):
        spend(stats, project, 0.1, who="analyst:ana")
    assert [entry.who for entry in stats.budget(project).entries] == ["analyst:ana", "analyst:ben"]
    assert stats.analyst_budget(project, "analyst:ana").remaining == Loss.of(rho=0.1)
    assert stats.analyst_budget(project, "analyst:ben") is None


def test_a_statistics_store_an_older_pprl_made_is_upgraded_and_its_ledgers_sealed(database_url, tmp_path, protocol):
    schema = f"pprl_stats_t{schema_suffix()}"
    stats = StatsStore(tmp_path / "data", database_url, schema=schema)
    stats.register_project("p1", protocol, {"msd": hashlib.sha256(b"pprl_msd").hexdigest()})
    spend(stats, "p1", 0.2)
    spend(stats, "p1", 0.3)
    prefix = f'"{schema}".' if database_url else ""
    with stats._engine.begin() as conn:
        for table, column in [("releases", "prev_sha256"), ("releases", "sha256"),
                              ("attribute_uploads", "tokens_sha256"), ("credentials", "name")]:  # fmt: skip
            conn.exec_driver_sql(f"ALTER TABLE {prefix}{table} DROP COLUMN {column}")
        conn.exec_driver_sql(f"DROP TABLE {prefix}ledger_heads")
    stats.close()
    upgraded = StatsStore(tmp_path / "data", database_url, schema=schema)
    assert [(check.ok, check.rows) for check in upgraded.verify_ledgers()] == [(True, 2)]
    assert upgraded.budget("p1").remaining == Loss.of(rho=0.5)
    spend(upgraded, "p1", 0.5)
    assert upgraded.authenticate("pprl_msd").party == "msd"
    upgraded.destroy()
