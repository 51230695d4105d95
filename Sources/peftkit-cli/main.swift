import PEFTKit
print("peftkit")
