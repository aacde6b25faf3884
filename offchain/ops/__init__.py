"""Operator commands: run a dev chain, deploy, admit members, register nodes and cameras, seal the
genesis, prepare node configurations, and show the consortium's health.

The logic lives in plain modules (`accounts`, `admin`, `chainctl`, `nodeinit`, `status`) that
take what they use as arguments and return data; `cli` is the thin argparse layer that turns
that data into tables or JSON and every expected failure into one line and a non-zero exit.
"""
