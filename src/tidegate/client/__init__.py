"""tidegate.client"""
