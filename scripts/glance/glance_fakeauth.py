"""Keystone-less test auth for Glance (loaded via the paste pipeline).

Copied into DATA_DIR/etc by scripts/glance-dev start (gunicorn --pythonpath).

X-Auth-Token: USER:PROJECT:ROLE[,ROLE...]   e.g.  alice:projA:member,reader
The token may be %-encoded (python-glanceclient sends alice%3AprojA%3A...).
It is turned into the headers keystonemiddleware would set; Glance's own
ContextMiddleware (next in the pipeline) builds the request context from them
and oslo.policy does the rest. No token -> 401 from ContextMiddleware;
malformed token -> 401 here. Client-supplied identity headers are dropped.
"""
import urllib.parse

import webob.dec
import webob.exc

_IDENTITY_HEADERS = (
    'X-Identity-Status', 'X-User-Id', 'X-User-Name', 'X-User',
    'X-Project-Id', 'X-Project-Name', 'X-Tenant-Id', 'X-Tenant-Name',
    'X-Tenant', 'X-Roles', 'X-Role', 'X-Service-Catalog',
    'X-User-Domain-Id', 'X-Project-Domain-Id', 'X-Is-Admin-Project',
    'X-System-Scope', 'X-Service-Roles',
)


class FakeAuth(object):
    def __init__(self, app):
        self.app = app

    @classmethod
    def factory(cls, global_conf, **local_conf):
        return cls

    @webob.dec.wsgify
    def __call__(self, req):
        for h in _IDENTITY_HEADERS:
            if h in req.headers:
                del req.headers[h]
        token = req.headers.get('X-Auth-Token')
        if token:
            parts = urllib.parse.unquote(token).split(':')
            if len(parts) != 3 or not parts[0] or not parts[1]:
                raise webob.exc.HTTPUnauthorized(
                    'X-Auth-Token must look like USER:PROJECT:ROLE[,ROLE...]')
            user, project, roles = parts
            req.headers['X-User-Id'] = user
            req.headers['X-User-Name'] = user
            req.headers['X-Project-Id'] = project
            req.headers['X-Project-Name'] = project
            req.headers['X-Roles'] = roles
            req.headers['X-Identity-Status'] = 'Confirmed'
        return req.get_response(self.app)
