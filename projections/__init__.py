"""agentledger.projections"""
