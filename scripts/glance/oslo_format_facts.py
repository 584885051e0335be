"""What oslo.utils' format inspectors conclude about files, read as Glance 33 reads uploads.

Usage: python oslo_format_facts.py FILE... (with the Glance venv's python)

Glance's file store reads an upload in 64 KiB chunks, then once more to find the end, through
oslo.utils' InspectWrapper (glance/location.py, ImageProxy.set_data). This reads each file the
same way and prints, as JSON, every inspector's format_match, complete, virtual_size,
actual_size and safety check outcome: the reference Depot's FormatInspector is tested against.
"""
import json
import logging
import sys

from oslo_utils.imageutils import format_inspector

CHUNK = 64 * 1024


def facts(path):
    with open(path, 'rb') as source:
        wrapper = format_inspector.InspectWrapper(source)
        while wrapper.read(CHUNK):
            pass
        wrapper.close()
    result = {}
    for inspector in wrapper._inspectors:
        entry = {}
        try:
            entry['matches'] = bool(inspector.format_match)
        except Exception as e:  # noqa: BLE001 - the VMDK inspector raises AttributeError
            entry['matches'] = 'raises: %s' % type(e).__name__
        entry['complete'] = inspector.complete
        try:
            entry['virtual_size'] = inspector.virtual_size
        except Exception:  # noqa: BLE001
            entry['virtual_size'] = None
        entry['actual_size'] = inspector.actual_size
        try:
            inspector.safety_check()
            entry['failed_checks'] = []
        except format_inspector.SafetyCheckFailed as e:
            entry['failed_checks'] = sorted(e.failures.keys())
        except format_inspector.ImageFormatError as e:
            entry['failed_checks'] = 'error: %s' % e
        except Exception as e:  # noqa: BLE001
            entry['failed_checks'] = 'error: %s' % e
        result[inspector.NAME] = entry
    return result


if __name__ == '__main__':
    # oslo.utils logs every failed check; the JSON says it all.
    logging.disable(logging.CRITICAL)
    print(json.dumps({path: facts(path) for path in sys.argv[1:]}, sort_keys=True))
