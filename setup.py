"""Build script: the metadata and dependencies are in ``setup.cfg``; this file only adds the bundles.

The MONAI bundles live in the top-level ``bundles/`` folder (the single copy in the repository). A wheel ships them
as package data of ``brainvq_monai._bundles`` (installed as ``brainvq_monai/_bundles/<name>/``), mapped onto that
folder with ``package_dir``; :func:`brainvq_monai.bundle.utils.default_bundle_root` finds either location.
Run outputs that a bundle may hold in a checkout (``runs/``, ``data/``, ``models/*.pt``) are not matched.
"""

from setuptools import find_packages, setup

BUNDLE_FILES = [
    "*/LICENSE",
    "*/large_files.yml",
    "*/large_files.yaml",
    "*/configs/*.json",
    "*/configs/*.yaml",
    "*/configs/*.yml",
    "*/configs/*.conf",
    "*/docs/**/*",
]

setup(
    packages=[*find_packages(include=["brainvq_monai", "brainvq_monai.*"]), "brainvq_monai._bundles"],
    package_dir={"brainvq_monai._bundles": "bundles"},
    package_data={"brainvq_monai": ["schemas/*.json"], "brainvq_monai._bundles": BUNDLE_FILES},
    exclude_package_data={"brainvq_monai._bundles": ["*.pt", "*.ts", "*.pth"]},
    # only the package_data above: no "would be ignored" warnings for the data folders (bundles/*/configs, schemas)
    include_package_data=False,
)
