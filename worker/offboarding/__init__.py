"""Offboarding a tenant, as SAP's guide orders it: its documents first, then its repository (then an operator
disconnects its destination); never another tenant's. ``python -m worker tenant offboard`` runs it."""
