"""tidegate.control"""
