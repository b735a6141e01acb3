"""Prints a YAML file as JSON: an independent reading of openapi.yaml for the contract test."""
import json
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    json.dump(yaml.safe_load(f), sys.stdout)
