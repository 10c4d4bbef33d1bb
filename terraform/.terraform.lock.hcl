# This file is maintained automatically by "terraform init".
# Manual edits may be lost in future updates.

provider "registry.terraform.io/digitalocean/digitalocean" {
  version     = "2.67.0"
  constraints = "~> 2.67"
  hashes = [
    "h1:aP17cu+Wphre/X5WI0wN7cvvJOn7RpL5DPorqnjUDWU=",
    "zh:1364adb0cd20ac5f68715442a70578994cbd80164215fa2850f2b5dd0d692d3c",
    "zh:20cc578de91abf7b744b98aefda6ebc6d924d43f26d0e11137c4cd42f5572da7",
    "zh:2c4aa0314ccc58d542e6482878e4aa0f1c2afbc603e1f3eb3d477184e6992c69",
    "zh:576966559fa1aa3b927cbb99f844aa85207768a5ba353915e65fe0e79bafd19a",
    "zh:578f330ac801ef84b618575ae22d3cc65f7dfaab2dd94231bd79029f4eeb7e79",
    "zh:7cf8832300e6383fc676dc225f61a8f45aa0d56e147b72d9c3b2d5053911367d",
    "zh:7dbf4e8e43aba01de0f0a4172d77927fa8d423144fd93981fa1acb5f9815521a",
    "zh:8524f8228c8313c1d5b899edc3cc9082af5e13f7add234f269efbf85c2239aec",
    "zh:aea0f4226b1532835f2adae6d5a5d58915fee8ab1c887912bd3bd5dc568b408d",
    "zh:bacf49ff468d46d75fd74f217b42e3d3f77033e4be96ab208b824c2ed6d5bb6e",
    "zh:bd86e04ba083372708cde95d25f9f3a1c19703e33d117eba6cda49e7d8089b98",
    "zh:ce80e486f168ff7abeef0b724d36c124d7b0c3ac44c4b6ac93a1546046a46108",
    "zh:d378bf43d919871e3b10934e8d5b09e8154261b204f6c02a834e35beec28a089",
    "zh:e1c91722d62e9680d6df931fe0d38eea0b8071df75af5a7294e1c88d482085c6",
    "zh:e62d08340f15f67f8168dd8fd7aeaeef1d145e71a5d93fdb88ccb73e7212951f",
    "zh:fd6acb198afb102ab71fed57bb622b83c1cf8ded37e262d8c4f07a83cea6d724",
  ]
}
