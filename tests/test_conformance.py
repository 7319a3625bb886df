"""The packaged conformance suite (:mod:`editkit.testing.test_conformance`), run here over every registered
editor and each config variant it declares; the fixtures come from editkit's pytest plugin."""

from editkit.testing.test_conformance import *  # noqa: F401,F403
