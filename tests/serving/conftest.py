"""The serving tests' fixtures live in :mod:`serving_support` (the test modules import its helpers by that
unique name: a bare ``from conftest import`` would find another folder's conftest in a full run)."""

from serving_support import client, detector_folder, digits_store, server, server_log

__all__ = ["client", "detector_folder", "digits_store", "server", "server_log"]
