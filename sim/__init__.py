"""The discrete-event simulator: the same batching and scheduling policies at virtual time.

Its engine, arrival sources and simulated backends arrive with `sluice sim`.
"""
