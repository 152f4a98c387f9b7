"""tidegate.agent"""
