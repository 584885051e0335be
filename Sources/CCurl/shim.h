#ifndef DEPOT_CCURL_SHIM_H
#define DEPOT_CCURL_SHIM_H

#include <curl/curl.h>

// curl_easy_setopt/getinfo are variadic, which Swift cannot call: one typed wrapper per
// argument type Depot passes.

static inline CURLcode depot_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode depot_curl_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode depot_curl_setopt_string(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode depot_curl_setopt_pointer(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode depot_curl_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode depot_curl_setopt_write(CURL *h, curl_write_callback f) { return curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, f); }
static inline CURLcode depot_curl_setopt_header(CURL *h, curl_write_callback f) { return curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, f); }
static inline CURLcode depot_curl_setopt_read(CURL *h, curl_read_callback f) { return curl_easy_setopt(h, CURLOPT_READFUNCTION, f); }
static inline CURLcode depot_curl_setopt_xferinfo(CURL *h, curl_xferinfo_callback f) { return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, f); }

static inline CURLcode depot_curl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode depot_curl_getinfo_off(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode depot_curl_getinfo_string(CURL *h, CURLINFO i, char **v) { return curl_easy_getinfo(h, i, v); }

static inline CURLMcode depot_curl_multi_setopt_long(CURLM *m, CURLMoption o, long v) { return curl_multi_setopt(m, o, v); }

static inline size_t depot_curl_writefunc_pause(void) { return CURL_WRITEFUNC_PAUSE; }
static inline size_t depot_curl_readfunc_abort(void) { return CURL_READFUNC_ABORT; }
static inline size_t depot_curl_readfunc_pause(void) { return CURL_READFUNC_PAUSE; }
static inline int depot_curlpause_recv(void) { return CURLPAUSE_RECV; }
static inline int depot_curlpause_send(void) { return CURLPAUSE_SEND; }

// CURLMsg's `data` is a union; Swift reads its members awkwardly.
static inline int depot_curl_msg_is_done(const CURLMsg *m) { return m->msg == CURLMSG_DONE; }
static inline CURLcode depot_curl_msg_result(const CURLMsg *m) { return m->data.result; }

#endif
