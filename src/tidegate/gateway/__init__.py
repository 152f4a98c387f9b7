"""tidegate.gateway"""
