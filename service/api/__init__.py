"""HTTP and WebSocket routes; each module is one APIRouter."""
