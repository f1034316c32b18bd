def main():
    print("skeleton")
