"""The model zoo's data, shipped in the wheel as the package `prunectl.zoo` (pyproject's package-dir mapping).

`entries/*.json` are the zoo entries, `weights/NAME/` the packaged trained runs, `recipes/*.toml` the shipped
recipes. Nothing here is code: readers find this folder through `prunectl.paths.zoo_root()`.
"""
