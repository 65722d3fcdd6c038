import DMAPools
print("txsim: placeholder")
