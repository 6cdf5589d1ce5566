"""Texts of the payer's exchange order page (fast_link) in Russian, English and Kazakh.

Same shape as the checkout's table: one text per language, `str.format` fields; Russian is the
fallback."""

from __future__ import annotations

from greengate.domain.exchange import OrderStatus

DO_NOT_PAY = {
    "ru": "Не переводите деньги по этой заявке.",
    "en": "Do not transfer money for this order.",
    "kk": "Бұл өтінім бойынша ақша аудармаңыз.",
}

TEXTS: dict[str, dict[str, str]] = {
    "title": {"ru": "Заявка № {id}", "en": "Order {id}", "kk": "№ {id} өтінім"},
    "heading": {"ru": "Заявка №{id}", "en": "Order №{id}", "kk": "№{id} өтінім"},
    "language": {"ru": "Язык", "en": "Language", "kk": "Тіл"},
    "amount": {"ru": "Сумма", "en": "Amount", "kk": "Сома"},
    "card": {"ru": "Карта", "en": "Card", "kk": "Карта"},
    "bank": {"ru": "Банк", "en": "Bank", "kk": "Банк"},
    "recipient": {"ru": "Получатель", "en": "Recipient", "kk": "Алушы"},
    "you_receive": {"ru": "Вы получите", "en": "You receive", "kk": "Сіз аласыз"},
    "qr_label": {
        "ru": "QR-код с реквизитами платежа",
        "en": "QR code with the payment details",
        "kk": "Төлем деректері бар QR коды",
    },
    "exact_amount": {
        "ru": "Переведите ровно {amount}: другую сумму нельзя автоматически сопоставить с вашей заявкой.",
        "en": "Transfer exactly {amount}: a different amount cannot be matched to your order automatically.",
        "kk": "Дәл {amount} аударыңыз: басқа соманы өтініміңізбен автоматты түрде сәйкестендіру мүмкін емес.",
    },
    "time_left": {"ru": "Осталось времени", "en": "Time left", "kk": "Қалған уақыт"},
    "until": {"ru": "(до {time} UTC)", "en": "(until {time} UTC)", "kk": "({time} UTC дейін)"},
    "keep_private": {
        "ru": "Не передавайте эту ссылку: по ней видны реквизиты платежа.",
        "en": "Keep this link private: anyone with it can see these payment details.",
        "kk": "Бұл сілтемені ешкімге бермеңіз: ол арқылы төлем деректері көрінеді.",
    },
    "not_found": {"ru": "Заявка не найдена", "en": "Order not found", "kk": "Өтінім табылмады"},
    "check_link": {
        "ru": "Проверьте полученную ссылку.",
        "en": "Check the link you were given.",
        "kk": "Берілген сілтемені тексеріңіз.",
    },
    f"status_{OrderStatus.UNCONFIRMED.value}": {
        "ru": "Реквизиты для оплаты ещё назначаются. Страница обновится сама.",
        "en": "Waiting for payment details to be assigned. This page refreshes by itself.",
        "kk": "Төлем деректері әлі тағайындалуда. Бет өздігінен жаңарады.",
    },
    f"status_{OrderStatus.AWAITING.value}": {
        "ru": "Переведите точную сумму ниже на эти реквизиты, пока не истекло время.",
        "en": "Transfer exactly the amount below to these details before the time runs out.",
        "kk": "Уақыт біткенше төмендегі нақты соманы осы деректерге аударыңыз.",
    },
    f"status_{OrderStatus.PAYED.value}": {
        "ru": "Оплата получена. Биткоины уже в пути.",
        "en": "Payment received. Bitcoin is on its way.",
        "kk": "Төлем алынды. Биткоин жолда.",
    },
    f"status_{OrderStatus.COMPLETED.value}": {
        "ru": "Заявка выполнена: биткоины отправлены.",
        "en": "Completed: bitcoin has been sent.",
        "kk": "Өтінім орындалды: биткоин жіберілді.",
    },
    f"status_{OrderStatus.AUTOCANCELED.value}": {
        lang: f"{first} {DO_NOT_PAY[lang]}"
        for lang, first in {
            "ru": "Время на оплату истекло.",
            "en": "The time to pay has run out.",
            "kk": "Төлеу уақыты өтіп кетті.",
        }.items()
    },
    f"status_{OrderStatus.CANCELED.value}": {
        lang: f"{first} {DO_NOT_PAY[lang]}"
        for lang, first in {
            "ru": "Заявка отменена.",
            "en": "This order was canceled.",
            "kk": "Өтінімнің күші жойылды.",
        }.items()
    },
}
