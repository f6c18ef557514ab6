#!/usr/bin/env bash
# Placeholder: the demo (build, template, demo user, private sshd on
# 127.0.0.1, a confined login) is not written yet.
echo "scripts/demo.sh: not yet" >&2
exit 1
