import PEFTKit
