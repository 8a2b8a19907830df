#!/bin/sh
echo "$1 ($(uname -m))"
