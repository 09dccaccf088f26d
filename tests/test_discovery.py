"""A module dropped into a registering package (methods, models, structure) is found without an import line."""

from __future__ import annotations

import sys

from prunectl.core.registry import import_package_modules


def test_every_module_of_a_package_is_imported_except_the_skipped(tmp_path, monkeypatch):
    pkg = tmp_path / "demo_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("SEEN = []\n")
    for name in ("alpha", "beta", "base"):
        (pkg / f"{name}.py").write_text(f"import demo_pkg\ndemo_pkg.SEEN.append({name!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import demo_pkg

    try:
        assert import_package_modules("demo_pkg", demo_pkg.__path__, skip=("base",)) == ["alpha", "beta"]
        assert sorted(demo_pkg.SEEN) == ["alpha", "beta"]
    finally:
        for name in [m for m in sys.modules if m == "demo_pkg" or m.startswith("demo_pkg.")]:
            del sys.modules[name]


def test_the_shipped_packages_register_what_their_files_define():
    import prunectl.methods as methods
    import prunectl.structure as structure

    assert {"l1-norm", "slimming", "weight", "l1-mask"} <= set(methods.list_methods())
    assert {"cifar_vgg", "cifar_resnet", "imagenet_resnet", "preresnet", "densenet", "lenet"} <= set(structure.PROVIDERS)
