#ifndef DEPOT_COPENSSL_SHIM_H
#define DEPOT_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/err.h>
#endif
