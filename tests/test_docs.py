"""The documentation pages that are generated from the code stay generated."""

from pathlib import Path

from streammask.cli.reference import generate

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_generated_from_the_declarations():
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == generate(), "docs/cli.md is stale: run `python -m streammask.cli.reference > docs/cli.md`"


def test_cli_reference_names_every_run_setting_and_variant_parameter():
    from streammask.pipeline.settings import RUN_PARAMS
    from streammask.variants import VARIANTS

    page = generate()
    for p in RUN_PARAMS:
        assert f"| `{p.name}` |" in page, p.name
    for name, variant in VARIANTS.items():
        for p in variant.params:
            assert f"`--{name}-{p.name.replace('_', '-')}`" in page, (name, p.name)
