import DMAPools
