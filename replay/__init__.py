"""agentledger.replay"""
