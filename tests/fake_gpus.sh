#!/usr/bin/env bash
# A GPU discovery script for tests on machines without GPUs: reports two fake GPU addresses.
echo '{"name": "gpu", "addresses": ["0", "1"]}'
