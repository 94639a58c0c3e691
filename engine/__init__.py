"""agentledger.engine"""
